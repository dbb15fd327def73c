//! Throughput of candidate inner loops of the AVX-512 int4 float kernel, so that a decode design
//! can be judged on this CPU before it is written (see the top comment of
//! `src/backend/cpu/quant/avx512.rs`).
//!
//! Each loop is one 64-byte line of codes (128 values) against one activation row, with
//! independent accumulators and no memory traffic: what the vector ports cost, nothing else.
//! Reported in time-stamp-counter ticks per line (the minimum over repetitions, which other
//! processes on a shared machine cannot lower) and relative to the current loop:
//!
//! - `current`: 7 `vpsrld`, 8 `vpermps` (16-entry f32 table), 8 `vfmadd231ps`;
//! - `dpbf16 f32`: 3 `vpsrlw`, 4 `vpermw` (32-entry bf16 table), 8 `vdpbf16ps` (activations split
//!   into bf16 high and low parts, two products per code vector);
//! - `dpbf16 bf16`: the same with bf16 activations, 4 `vdpbf16ps`;
//! - `vpermw upper`: 3 `vpsrld`, 4 `vpermps` for nibbles 0..3 and 4 zero-masked `vpermw` that
//!   put a bf16 table value into the upper half of each 32-bit lane for nibbles 4..7 (an f32
//!   without shifting them down), 8 `vfmadd231ps`;
//! - `vnni 3 limbs`: the codes as unsigned bytes against f32 activations quantized per group to
//!   24-bit integers split into three signed bytes (`x = s (2^16 h + 2^8 m + l)`, about f32's
//!   precision relative to the group's largest value): 1 `vpsrlw` and 2 `vpandd` split the low
//!   and high nibbles, 6 `vpdpbusd` (64 products each) into three fresh accumulators, then
//!   2 `vpslld`, 2 `vpaddd`, 1 `vcvtdq2ps` and 1 `vfmadd231ps` (the group's scale) per line;
//!
//! then single instructions (8 independent ones per iteration) and, where the CPU has AMX, one
//! 16-row tile load and one `tdpbf16ps`. `cargo bench --bench int4_decode`; x86-64 only.

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::_rdtsc;

    /// Iterations per timed run, and runs (the minimum is kept).
    const ITERATIONS: u64 = 20_000;
    const RUNS: usize = 30;

    /// Minimum ticks per iteration of `body`.
    fn ticks(mut body: impl FnMut()) -> f64 {
        let mut best = u64::MAX;
        for _ in 0..RUNS {
            // SAFETY: reading the time-stamp counter has no preconditions.
            let start = unsafe { _rdtsc() };
            for _ in 0..ITERATIONS {
                body();
            }
            // SAFETY: as above.
            best = best.min(unsafe { _rdtsc() } - start);
        }
        best as f64 / ITERATIONS as f64
    }

    /// Zeroes the registers the loops read (zeroing idioms take no execution port), so that no
    /// input is a denormal or NaN that could slow an instruction down.
    macro_rules! zero_inputs {
        () => {
            "vpxord zmm0, zmm0, zmm0\nvpxord zmm20, zmm20, zmm20\nvpxord zmm21, zmm21, zmm21\n\
             vpxord zmm22, zmm22, zmm22\nvpxord zmm29, zmm29, zmm29\nvpxord zmm30, zmm30, zmm30\n\
             vpxord zmm31, zmm31, zmm31"
        };
    }

    /// # Safety
    /// AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn current() {
        // SAFETY: register-only vector instructions the caller's CPU supports.
        unsafe {
            asm!(
                zero_inputs!(),
                "vpsrld zmm1, zmm0, 4",
                "vpsrld zmm2, zmm0, 8",
                "vpsrld zmm3, zmm0, 12",
                "vpsrld zmm4, zmm0, 16",
                "vpsrld zmm5, zmm0, 20",
                "vpsrld zmm6, zmm0, 24",
                "vpsrld zmm7, zmm0, 28",
                "vpermps zmm8, zmm0, zmm30",
                "vpermps zmm9, zmm1, zmm30",
                "vpermps zmm10, zmm2, zmm30",
                "vpermps zmm11, zmm3, zmm30",
                "vpermps zmm12, zmm4, zmm30",
                "vpermps zmm13, zmm5, zmm30",
                "vpermps zmm14, zmm6, zmm30",
                "vpermps zmm15, zmm7, zmm30",
                "vfmadd231ps zmm16, zmm8, zmm31",
                "vfmadd231ps zmm17, zmm9, zmm31",
                "vfmadd231ps zmm18, zmm10, zmm31",
                "vfmadd231ps zmm19, zmm11, zmm31",
                "vfmadd231ps zmm20, zmm12, zmm31",
                "vfmadd231ps zmm21, zmm13, zmm31",
                "vfmadd231ps zmm22, zmm14, zmm31",
                "vfmadd231ps zmm23, zmm15, zmm31",
                clobber_abi("C"),
                options(nomem, nostack)
            )
        }
    }

    /// # Safety
    /// AVX-512 F/BW/VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni_limbs() {
        // SAFETY: as in `current`.
        unsafe {
            asm!(
                zero_inputs!(),
                "vpandd zmm1, zmm0, zmm28",
                "vpsrlw zmm2, zmm0, 4",
                "vpandd zmm2, zmm2, zmm28",
                "vpxord zmm16, zmm16, zmm16",
                "vpxord zmm17, zmm17, zmm17",
                "vpxord zmm18, zmm18, zmm18",
                "vpdpbusd zmm16, zmm1, zmm23",
                "vpdpbusd zmm17, zmm1, zmm24",
                "vpdpbusd zmm18, zmm1, zmm25",
                "vpdpbusd zmm16, zmm2, zmm26",
                "vpdpbusd zmm17, zmm2, zmm27",
                "vpdpbusd zmm18, zmm2, zmm29",
                "vpslld zmm16, zmm16, 16",
                "vpslld zmm17, zmm17, 8",
                "vpaddd zmm16, zmm16, zmm17",
                "vpaddd zmm16, zmm16, zmm18",
                "vcvtdq2ps zmm16, zmm16",
                "vfmadd231ps zmm19, zmm16, zmm31",
                clobber_abi("C"),
                options(nomem, nostack)
            )
        }
    }

    /// # Safety
    /// AVX-512 F/BW/BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn dpbf16_split() {
        // SAFETY: as in `current`.
        unsafe {
            asm!(
                zero_inputs!(),
                "vpsrlw zmm1, zmm0, 4",
                "vpsrlw zmm2, zmm0, 8",
                "vpsrlw zmm3, zmm0, 12",
                "vpermw zmm8, zmm0, zmm30",
                "vpermw zmm9, zmm1, zmm30",
                "vpermw zmm10, zmm2, zmm30",
                "vpermw zmm11, zmm3, zmm30",
                "vdpbf16ps zmm16, zmm8, zmm31",
                "vdpbf16ps zmm17, zmm9, zmm31",
                "vdpbf16ps zmm18, zmm10, zmm31",
                "vdpbf16ps zmm19, zmm11, zmm31",
                "vdpbf16ps zmm20, zmm8, zmm29",
                "vdpbf16ps zmm21, zmm9, zmm29",
                "vdpbf16ps zmm22, zmm10, zmm29",
                "vdpbf16ps zmm23, zmm11, zmm29",
                clobber_abi("C"),
                options(nomem, nostack)
            )
        }
    }

    /// # Safety
    /// AVX-512 F/BW/BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn dpbf16_bf16() {
        // SAFETY: as in `current`.
        unsafe {
            asm!(
                zero_inputs!(),
                "vpsrlw zmm1, zmm0, 4",
                "vpsrlw zmm2, zmm0, 8",
                "vpsrlw zmm3, zmm0, 12",
                "vpermw zmm8, zmm0, zmm30",
                "vpermw zmm9, zmm1, zmm30",
                "vpermw zmm10, zmm2, zmm30",
                "vpermw zmm11, zmm3, zmm30",
                "vdpbf16ps zmm16, zmm8, zmm31",
                "vdpbf16ps zmm17, zmm9, zmm31",
                "vdpbf16ps zmm18, zmm10, zmm31",
                "vdpbf16ps zmm19, zmm11, zmm31",
                clobber_abi("C"),
                options(nomem, nostack)
            )
        }
    }

    /// # Safety
    /// AVX-512 F/BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn vpermw_upper() {
        // SAFETY: as in `current`; k1 is set here and clobbered.
        unsafe {
            asm!(
                zero_inputs!(),
                "mov eax, 0xAAAAAAAA", "kmovd k1, eax",
                "vpsrld zmm1, zmm0, 4", "vpsrld zmm2, zmm0, 8", "vpsrld zmm3, zmm0, 12",
                "vpermps zmm8, zmm0, zmm30", "vpermps zmm9, zmm1, zmm30",
                "vpermps zmm10, zmm2, zmm30", "vpermps zmm11, zmm3, zmm30",
                "vpermw zmm12{{k1}}{{z}}, zmm0, zmm29", "vpermw zmm13{{k1}}{{z}}, zmm1, zmm29",
                "vpermw zmm14{{k1}}{{z}}, zmm2, zmm29", "vpermw zmm15{{k1}}{{z}}, zmm3, zmm29",
                "vfmadd231ps zmm16, zmm8, zmm31", "vfmadd231ps zmm17, zmm9, zmm31",
                "vfmadd231ps zmm18, zmm10, zmm31", "vfmadd231ps zmm19, zmm11, zmm31",
                "vfmadd231ps zmm20, zmm12, zmm31", "vfmadd231ps zmm21, zmm13, zmm31",
                "vfmadd231ps zmm22, zmm14, zmm31", "vfmadd231ps zmm23, zmm15, zmm31",
                out("eax") _,
                clobber_abi("C"),
                options(nomem, nostack)
            )
        }
    }

    /// Eight independent copies of one register-only instruction, `{}` being the destination.
    macro_rules! eight {
        ($name:ident, $features:literal, $op:literal) => {
            /// # Safety
            /// The CPU features named on the function.
            #[target_feature(enable = $features)]
            unsafe fn $name() {
                // SAFETY: as in `current`.
                unsafe {
                    asm!(
                        zero_inputs!(),
                        concat!($op, " zmm1, zmm20, zmm21"),
                        concat!($op, " zmm2, zmm20, zmm21"),
                        concat!($op, " zmm3, zmm20, zmm21"),
                        concat!($op, " zmm4, zmm20, zmm21"),
                        concat!($op, " zmm5, zmm20, zmm21"),
                        concat!($op, " zmm6, zmm20, zmm21"),
                        concat!($op, " zmm7, zmm20, zmm21"),
                        concat!($op, " zmm8, zmm20, zmm21"),
                        clobber_abi("C"),
                        options(nomem, nostack)
                    )
                }
            }
        };
    }
    eight!(fma8, "avx512f", "vfmadd231ps");
    eight!(vpermps8, "avx512f", "vpermps");
    eight!(vpermw8, "avx512f,avx512bw", "vpermw");
    eight!(dpbf16_8, "avx512f,avx512bf16", "vdpbf16ps");

    /// # Safety
    /// AVX-512 F/BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn vpermw_and_shifts() {
        // SAFETY: as in `current`.
        unsafe {
            asm!(
                zero_inputs!(),
                "vpermw zmm1, zmm20, zmm21",
                "vpermw zmm2, zmm20, zmm21",
                "vpermw zmm3, zmm20, zmm21",
                "vpermw zmm4, zmm20, zmm21",
                "vpsrld zmm5, zmm22, 4",
                "vpsrld zmm6, zmm22, 4",
                "vpsrld zmm7, zmm22, 4",
                "vpsrld zmm8, zmm22, 4",
                clobber_abi("C"),
                options(nomem, nostack)
            )
        }
    }

    /// # Safety
    /// AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn vpermps_and_shifts() {
        // SAFETY: as in `current`.
        unsafe {
            asm!(
                zero_inputs!(),
                "vpermps zmm1, zmm20, zmm21",
                "vpermps zmm2, zmm20, zmm21",
                "vpermps zmm3, zmm20, zmm21",
                "vpermps zmm4, zmm20, zmm21",
                "vpsrld zmm5, zmm22, 4",
                "vpsrld zmm6, zmm22, 4",
                "vpsrld zmm7, zmm22, 4",
                "vpsrld zmm8, zmm22, 4",
                clobber_abi("C"),
                options(nomem, nostack)
            )
        }
    }

    /// AMX: the tile configuration (palette 1): tiles 0 and 1 (weights) of 16 rows x 64 bytes,
    /// tile 3 (two activation columns) and tiles 2, 4, 5, 6 (four independent accumulators) of
    /// 16 rows x 8 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    /// Asks Linux for the AMX tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`).
    fn request_amx() -> bool {
        let status: i64;
        // SAFETY: the arch_prctl system call reads its two integer arguments only.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") 158i64 => status,
                in("rdi") 0x1023i64,
                in("rsi") 18i64,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            )
        };
        status == 0
    }

    /// Minimum ticks of one 16-row tile load and of one `tdpbf16ps`.
    fn amx() -> Option<(f64, f64)> {
        // CPUID leaf 7 exists on every CPU with AVX-512 (checked by the caller).
        let features = std::arch::x86_64::__cpuid_count(7, 0);
        // EDX bit 22: AMX-BF16.
        if features.edx & (1 << 22) == 0 || !request_amx() {
            return None;
        }
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        for (tile, bytes) in [64u16, 64, 8, 8, 8, 8, 8].into_iter().enumerate() {
            config.bytes_per_row[tile] = bytes;
            config.rows[tile] = 16;
        }
        let buffer: Vec<u8> = (0..4096).map(|i| (i % 5) as u8).collect();
        let data = buffer.as_ptr();
        // SAFETY: AMX was detected and granted; the configuration is valid for palette 1 and
        // every tile load reads 16 rows of at most 64 bytes inside `buffer`.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) &config as *const TileConfig, options(nostack));
            asm!(
                "tileloadd tmm0, [{0} + {1} * 1]",
                "tileloadd tmm1, [{0} + {1} * 1]",
                "tileloadd tmm3, [{0} + {1} * 1]",
                "tilezero tmm2",
                "tilezero tmm4",
                "tilezero tmm5",
                "tilezero tmm6",
                in(reg) data, in(reg) 64usize, options(nostack)
            );
        }
        // SAFETY (both): as above.
        let load = ticks(|| unsafe {
            asm!("tileloadd tmm0, [{0} + {1} * 1]", in(reg) data, in(reg) 64usize, options(nostack))
        });
        let product = ticks(|| unsafe {
            asm!(
                "tdpbf16ps tmm2, tmm0, tmm3",
                "tdpbf16ps tmm4, tmm1, tmm3",
                "tdpbf16ps tmm5, tmm0, tmm3",
                "tdpbf16ps tmm6, tmm1, tmm3",
                options(nomem, nostack)
            )
        }) / 4.0;
        // SAFETY: releases the tile state this function configured.
        unsafe { asm!("tilerelease", options(nomem, nostack)) };
        Some((load, product))
    }

    pub fn main() {
        let has = |f: &str| match f {
            "bf16" => is_x86_feature_detected!("avx512bf16"),
            "vnni" => is_x86_feature_detected!("avx512vnni"),
            _ => is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw"),
        };
        if !has("avx512") {
            println!("int4_decode: no AVX-512 F/BW on this CPU");
            return;
        }
        // SAFETY (every call below): the features each function names were just detected.
        let base = ticks(|| unsafe { current() });
        println!("ticks per 64-byte line of codes, one activation row (minimum of {RUNS} runs)");
        println!("{:<14} {:>7.2}  1.00x", "current", base);
        let mut loops: Vec<(&str, f64)> =
            vec![("vpermw upper", ticks(|| unsafe { vpermw_upper() }))];
        if has("vnni") {
            loops.push(("vnni 3 limbs", ticks(|| unsafe { vnni_limbs() })));
        }
        if has("bf16") {
            loops.push(("dpbf16 f32", ticks(|| unsafe { dpbf16_split() })));
            loops.push(("dpbf16 bf16", ticks(|| unsafe { dpbf16_bf16() })));
        }
        for (name, t) in loops {
            println!("{name:<14} {t:>7.2}  {:.2}x", t / base);
        }
        println!("\nticks per 8 independent instructions");
        let mut singles: Vec<(&str, f64)> = vec![
            ("vfmadd231ps", ticks(|| unsafe { fma8() })),
            ("vpermps", ticks(|| unsafe { vpermps8() })),
            ("vpermw", ticks(|| unsafe { vpermw8() })),
            (
                "4 vpermps + 4 vpsrld",
                ticks(|| unsafe { vpermps_and_shifts() }),
            ),
            (
                "4 vpermw + 4 vpsrld",
                ticks(|| unsafe { vpermw_and_shifts() }),
            ),
        ];
        if has("bf16") {
            singles.push(("vdpbf16ps", ticks(|| unsafe { dpbf16_8() })));
        }
        for (name, t) in singles {
            println!("{name:<22} {t:>7.2}");
        }
        match amx() {
            Some((load, product)) => println!(
                "\nAMX: tileloadd 16 x 64 bytes {load:.2} ticks, tdpbf16ps 16 rows {product:.2} \
                 ticks"
            ),
            None => println!("\nAMX: not available"),
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::main();
}
