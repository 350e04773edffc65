//! Exact decimal arithmetic for `price × units` and sums of costs.
//!
//! Langfuse stores prices as Postgres decimals and multiplies with decimal.js, so
//! `2.5e-06 × 1000` is exactly `0.0025`, not the binary-float neighbour. We read each price as
//! the decimal its shortest round-trip text denotes (what the JSON file says), multiply and add
//! exactly, and round to the nearest `f64` once at the end.

/// `mant × 10^-scale`, non-negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dec {
    mant: u128,
    scale: u32,
}

/// Powers of ten that are exact in an `f64` (10^0 ..= 10^22).
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl Dec {
    pub(crate) const ZERO: Dec = Dec { mant: 0, scale: 0 };

    /// The decimal written by `x`'s shortest round-trip representation. `None` for negative,
    /// NaN or infinite values (never a price or a cost).
    pub(crate) fn from_f64(x: f64) -> Option<Dec> {
        if !x.is_finite() || x < 0.0 {
            return None;
        }
        if x == 0.0 {
            return Some(Dec::ZERO);
        }
        // `{:e}` without a precision prints the shortest digits that round-trip: "2.5e-6".
        let text = format!("{x:e}");
        let (digits, exp) = text.split_once('e')?;
        let exp: i64 = exp.parse().ok()?;
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let mut mant: u128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            mant = mant.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
        }
        let scale = i64::try_from(frac.len()).ok()? - exp;
        if scale >= 0 {
            Some(Dec {
                mant,
                scale: u32::try_from(scale).ok()?,
            })
        } else {
            let up = 10u128.checked_pow(u32::try_from(-scale).ok()?)?;
            Some(Dec {
                mant: mant.checked_mul(up)?,
                scale: 0,
            })
        }
    }

    pub(crate) fn mul_units(self, units: u64) -> Option<Dec> {
        Some(Dec {
            mant: self.mant.checked_mul(u128::from(units))?,
            scale: self.scale,
        })
    }

    pub(crate) fn checked_add(self, other: Dec) -> Option<Dec> {
        let (hi, lo) = if self.scale >= other.scale {
            (self, other)
        } else {
            (other, self)
        };
        let lifted = lo
            .mant
            .checked_mul(10u128.checked_pow(hi.scale - lo.scale)?)?;
        Some(Dec {
            mant: hi.mant.checked_add(lifted)?,
            scale: hi.scale,
        })
    }

    /// The nearest `f64` (round half to even), as decimal.js's `toNumber()` gives.
    pub(crate) fn to_f64(self) -> f64 {
        if self.mant == 0 {
            return 0.0;
        }
        // Both operands exact, so one IEEE division rounds correctly.
        if self.mant < (1u128 << 53) && (self.scale as usize) < EXACT_POW10.len() {
            return self.mant as f64 / EXACT_POW10[self.scale as usize];
        }
        // Rust's float parser rounds correctly for any length of digits.
        format!("{}e-{}", self.mant, self.scale)
            .parse()
            .unwrap_or(f64::NAN)
    }
}

/// Exact sum of non-negative amounts, rounded once. Falls back to float addition if the exact
/// sum would not fit (it never does for real prices), saturating at `f64::MAX`: an infinite
/// cost could not be stored as JSON.
pub(crate) fn sum(amounts: impl IntoIterator<Item = f64>) -> f64 {
    let mut exact = Some(Dec::ZERO);
    let mut float = 0.0;
    for a in amounts {
        float += a;
        exact = exact.and_then(|acc| acc.checked_add(Dec::from_f64(a)?));
    }
    exact.map_or(float.min(f64::MAX), Dec::to_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(x: f64) -> Dec {
        Dec::from_f64(x).unwrap()
    }

    #[test]
    fn reads_the_shortest_decimal() {
        assert_eq!(dec(2.5e-06), Dec { mant: 25, scale: 7 });
        assert_eq!(
            dec(1.25e-06),
            Dec {
                mant: 125,
                scale: 8
            }
        );
        assert_eq!(dec(0.1), Dec { mant: 1, scale: 1 });
        assert_eq!(
            dec(1e20),
            Dec {
                mant: 10u128.pow(20),
                scale: 0
            }
        );
        assert_eq!(dec(0.0), Dec::ZERO);
        assert_eq!(Dec::from_f64(-1.0), None);
        assert_eq!(Dec::from_f64(f64::NAN), None);
        assert_eq!(Dec::from_f64(f64::INFINITY), None);
    }

    #[test]
    fn products_are_exact_decimals() {
        assert_eq!(dec(2.5e-06).mul_units(1000).unwrap().to_f64(), 0.0025);
        assert_eq!(dec(1e-05).mul_units(500).unwrap().to_f64(), 0.005);
        // Binary floats get this one wrong: 3 × 0.1 = 0.30000000000000004.
        assert_eq!(dec(0.1).mul_units(3).unwrap().to_f64(), 0.3);
        assert_ne!(0.1 * 3.0, 0.3);
    }

    #[test]
    fn sums_are_rounded_once() {
        assert_eq!(sum([0.1, 0.2]), 0.3);
        assert_eq!(sum([0.0025, 0.005]), 0.0075);
        assert_eq!(sum([5e-05, 1.25e-04, 3e-04]), 4.75e-04);
        assert_eq!(sum([]), 0.0);
        assert_eq!(sum([1e308, 1e308]), f64::MAX);
    }

    #[test]
    fn slow_path_rounds_correctly() {
        // 17 significant digits and a large scale go through the string parser.
        let d = dec(0.30000000000000004);
        assert_eq!(d.to_f64(), 0.30000000000000004);
        let tiny = dec(5e-324);
        assert_eq!(tiny.to_f64(), 5e-324);
        let big = dec(1.5e-10).mul_units(u64::MAX).unwrap().to_f64();
        assert!((big - 2_767_011_611.056_432_7).abs() < 1e-6);
    }
}
