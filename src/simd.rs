//! Which x86-64 vector extension the CPU paths run: the widest the processor has, which the
//! environment variable `TENSORBRIDGE_SIMD` (`baseline`, `avx2` or `avx512`) can lower (to
//! compare the variants, or to test each on one machine) but never raise past what the
//! processor has. The one place the variable is read: the CPU backend's train step, the
//! core's optimizer passes, the int8 input quantiser and the int8 lanes all ask here. An
//! unknown value is reported on stderr, once, and ignored.
//!
//! Each path still tests the processor for the features of its own code ([`detected`] for
//! the `f32` paths; the int8 passes need VNNI or AVX2 alone) and asks [`allows`] how wide it
//! may go. Off x86-64 everything is [`Simd::Baseline`].

use std::sync::OnceLock;

/// A vector extension a CPU path can be compiled for, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Simd {
    /// As the crate is built (SSE2 on the baseline x86-64).
    Baseline,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F, BW, DQ and VL (with AVX2 and FMA).
    Avx512,
}

impl Simd {
    /// Every extension, narrowest first.
    pub(crate) const ALL: [Simd; 3] = [Simd::Baseline, Simd::Avx2, Simd::Avx512];

    /// The name `TENSORBRIDGE_SIMD` takes (and the backend's description shows).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Simd::Baseline => "baseline",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }

    /// The extension `value` names (surrounding blanks ignored), if any.
    fn parse(value: &str) -> Option<Simd> {
        Simd::ALL.into_iter().find(|s| s.name() == value.trim())
    }
}

/// The widest extension of the `f32` paths this processor has.
pub(crate) fn detected() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") && has!("avx2") && has!("fma") {
            return Simd::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Simd::Avx2;
        }
    }
    Simd::Baseline
}

/// The limit `TENSORBRIDGE_SIMD` sets, read once (`None`: unset or unknown).
fn asked() -> Option<Simd> {
    static ASKED: OnceLock<Option<Simd>> = OnceLock::new();
    *ASKED.get_or_init(|| {
        let value = std::env::var_os("TENSORBRIDGE_SIMD")?;
        let value = value.to_string_lossy();
        let parsed = Simd::parse(&value);
        if parsed.is_none() {
            eprintln!(
                "tensorbridge: TENSORBRIDGE_SIMD={value:?} is not one of baseline, avx2, avx512; using {}",
                detected().name()
            );
        }
        parsed
    })
}

/// Whether `TENSORBRIDGE_SIMD` lets a path run code as wide as `simd` (it says nothing of
/// the processor: the path tests that itself). Asked by the x86-64 int8 passes alone.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn allows(simd: Simd) -> bool {
    asked().is_none_or(|limit| simd <= limit)
}

/// The extension the `f32` paths run: [`detected`], lowered to `TENSORBRIDGE_SIMD`'s
/// limit. Computed once.
pub(crate) fn chosen() -> Simd {
    static CHOICE: OnceLock<Simd> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let best = detected();
        asked().map_or(best, |limit| limit.min(best))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for s in Simd::ALL {
            assert_eq!(Simd::parse(s.name()), Some(s));
            assert_eq!(Simd::parse(&format!(" {} \n", s.name())), Some(s));
        }
        assert_eq!(Simd::parse("avx"), None);
        assert_eq!(Simd::parse("AVX2"), None);
        assert_eq!(Simd::parse(""), None);
    }

    #[test]
    fn the_choice_never_exceeds_the_processor() {
        assert!(chosen() <= detected());
        assert!(allows(chosen()));
        assert!(allows(Simd::Baseline));
    }
}
