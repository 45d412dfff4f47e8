//! Kubernetes quantities (`"500m"`, `"1"`, `"73492m"`, `"1.5Ki"`, `"2e3"`).
//!
//! SMI uses them twice: TrafficSplit v1alpha1 weights, and every value of the Traffic Metrics
//! API (counts are fractional because they come from Prometheus' `increase()`). Parsing is exact
//! (a decimal mantissa and exponent) so that weights never drift through floating point.

use std::fmt;

/// A quantity that does not follow the Kubernetes grammar, or does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantity {0:?} is empty")]
    Empty(String),
    #[error("quantity {0:?} is not a number followed by an optional suffix (m, k, M, Ki, Mi, e3, ...)")]
    Syntax(String),
    #[error("quantity {0:?} is too large")]
    Overflow(String),
}

/// A parsed quantity: `mantissa × 10^exp10 × 2^exp2`, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exp10: i32,
    exp2: u32,
}

impl Quantity {
    /// Parses a quantity string following the Kubernetes grammar.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(QuantityError::Empty(input.to_string()));
        }
        let syntax = || QuantityError::Syntax(input.to_string());
        let overflow = || QuantityError::Overflow(input.to_string());

        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(syntax());
        }
        let mut mantissa: i128 = 0;
        for digit in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(digit - b'0')))
                .ok_or_else(overflow)?;
        }
        let mut exp10 = -i32::try_from(frac_part.len()).map_err(|_| overflow())?;
        let mut exp2 = 0u32;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            exp if exp.starts_with(['e', 'E']) => {
                let e = &exp[1..];
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                let e: i32 = e.parse().map_err(|_| overflow())?;
                exp10 = exp10.checked_add(e).ok_or_else(overflow)?;
            }
            _ => return Err(syntax()),
        }
        if negative {
            mantissa = -mantissa;
        }
        Ok(Quantity { mantissa, exp10, exp2 })
    }

    /// The value as a float, for metrics. Exact for the values SMI produces.
    pub fn as_f64(&self) -> f64 {
        // Parse the decimal form rather than multiply powers of ten: it rounds once, correctly.
        let decimal: f64 = format!("{}e{}", self.mantissa, self.exp10).parse().unwrap_or(f64::NAN);
        decimal * 2f64.powi(self.exp2 as i32)
    }

    /// The value in thousandths, rounded half away from zero. `"500m"` → 500, `"1"` → 1000.
    pub fn as_milli(&self) -> Option<i64> {
        let mut value = self.mantissa.checked_mul(1i128.checked_shl(self.exp2)?)?;
        let exp = self.exp10.checked_add(3)?;
        if exp >= 0 {
            value = value.checked_mul(10i128.checked_pow(u32::try_from(exp).ok()?)?)?;
        } else {
            let divisor = 10i128.checked_pow(u32::try_from(-exp).ok()?).unwrap_or(i128::MAX);
            let (q, r) = (value / divisor, value % divisor);
            value = if r.abs() * 2 >= divisor { q + value.signum() } else { q };
        }
        i64::try_from(value).ok()
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

/// Formats a value in thousandths the way the API server canonicalises it: `1000` → `"1"`,
/// `500` → `"500m"`.
pub fn format_milli(milli: i64) -> String {
    if milli % 1000 == 0 { format!("{}", milli / 1000) } else { format!("{milli}m") }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_milli() {
            Some(m) => f.write_str(&format_milli(m)),
            None => write!(f, "{}e{}", self.mantissa, self.exp10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shapes_smi_produces() {
        assert_eq!(Quantity::parse("500m").unwrap().as_milli(), Some(500));
        assert_eq!(Quantity::parse("1").unwrap().as_milli(), Some(1000));
        assert_eq!(Quantity::parse("0").unwrap().as_milli(), Some(0));
        assert_eq!(Quantity::parse("73492m").unwrap().as_f64(), 73.492);
        assert_eq!(Quantity::parse("296875m").unwrap().as_f64(), 296.875);
        assert_eq!(Quantity::parse("1.5").unwrap().as_milli(), Some(1500));
        assert_eq!(Quantity::parse(".5").unwrap().as_milli(), Some(500));
        assert_eq!(Quantity::parse("5.").unwrap().as_milli(), Some(5000));
        assert_eq!(Quantity::parse("+2").unwrap().as_milli(), Some(2000));
        assert_eq!(Quantity::parse("-250m").unwrap().as_milli(), Some(-250));
    }

    #[test]
    fn parses_every_suffix() {
        let cases = [
            ("1500n", 0.0000015),
            ("3u", 0.000003),
            ("2k", 2000.0),
            ("2M", 2e6),
            ("2G", 2e9),
            ("2T", 2e12),
            ("2P", 2e15),
            ("2E", 2e18),
            ("1Ki", 1024.0),
            ("1Mi", 1048576.0),
            ("1Gi", 1073741824.0),
            ("1Ti", 1099511627776.0),
            ("1Pi", 1125899906842624.0),
            ("1Ei", 1152921504606846976.0),
            ("2e3", 2000.0),
            ("2E3", 2000.0),
            ("25e-3", 0.025),
            ("1.5e+2", 150.0),
        ];
        for (text, want) in cases {
            let got = Quantity::parse(text).unwrap().as_f64();
            assert!((got - want).abs() <= want.abs() * 1e-12, "{text}: got {got}, want {want}");
        }
    }

    #[test]
    fn rounds_sub_milli_values_half_away_from_zero() {
        assert_eq!(Quantity::parse("1500u").unwrap().as_milli(), Some(2));
        assert_eq!(Quantity::parse("1499u").unwrap().as_milli(), Some(1));
        assert_eq!(Quantity::parse("-1500u").unwrap().as_milli(), Some(-2));
    }

    #[test]
    fn rejects_malformed_quantities_with_the_input_in_the_message() {
        for bad in ["", " ", "m", "abc", "1x", "1.2.3", "1e", "1e+", "1ee3", "1KI", "--1", "1 m"] {
            let err = Quantity::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{bad:?} gave {err}");
        }
    }

    #[test]
    fn reports_overflow_instead_of_wrapping() {
        let huge = "9".repeat(60);
        assert!(matches!(Quantity::parse(&huge), Err(QuantityError::Overflow(_))));
        assert_eq!(Quantity::parse("9E").unwrap().as_milli(), None);
    }

    #[test]
    fn formats_milli_values_canonically() {
        assert_eq!(format_milli(1000), "1");
        assert_eq!(format_milli(0), "0");
        assert_eq!(format_milli(500), "500m");
        assert_eq!(format_milli(100_000), "100");
        assert_eq!(Quantity::parse("0.25").unwrap().to_string(), "250m");
    }
}
