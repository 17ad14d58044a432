//! A certificate's validity period, read straight from its DER (RFC 5280 §4.1): ACME renewal
//! needs only `notBefore` and `notAfter`, not an X.509 library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a certificate starts and stops being valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

#[derive(Debug, thiserror::Error)]
#[error("not an X.509 certificate: {0}")]
pub struct BadCertificate(&'static str);

impl Validity {
    /// Reads `Certificate.tbsCertificate.validity`.
    pub fn of(der: &[u8]) -> Result<Self, BadCertificate> {
        let (cert, _) = tlv(der, 0x30)?;
        let (tbs, _) = tlv(cert, 0x30)?;
        let mut rest = tbs;
        // [0] EXPLICIT version, optional.
        if rest.first() == Some(&0xa0) {
            rest = tlv(rest, 0xa0)?.1;
        }
        rest = tlv(rest, 0x02)?.1; // serialNumber
        rest = tlv(rest, 0x30)?.1; // signature AlgorithmIdentifier
        rest = tlv(rest, 0x30)?.1; // issuer
        let (validity, _) = tlv(rest, 0x30)?;
        let (not_before, rest) = time(validity)?;
        let (not_after, _) = time(rest)?;
        Ok(Self {
            not_before,
            not_after,
        })
    }

    /// When to renew: with a third of the lifetime left (30 days of Let's Encrypt's 90, two
    /// of a six-day certificate), the CA's advice for certificates of any length.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_after - life / 3
    }
}

/// One DER element with the expected tag: its content, and what follows it.
fn tlv(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), BadCertificate> {
    let (&got, rest) = input.split_first().ok_or(BadCertificate("truncated"))?;
    if got != tag {
        return Err(BadCertificate("unexpected element"));
    }
    let (&first, mut rest) = rest.split_first().ok_or(BadCertificate("truncated"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(BadCertificate("bad length"));
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if rest.len() < len {
        return Err(BadCertificate("truncated"));
    }
    Ok(rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as RFC 5280 allows.
fn time(input: &[u8]) -> Result<(SystemTime, &[u8]), BadCertificate> {
    let bad = BadCertificate("bad time");
    let tag = *input.first().ok_or(BadCertificate("truncated"))?;
    let (text, rest) = tlv(input, tag)?;
    let digits = match (tag, text.split_last()) {
        (0x17 | 0x18, Some((b'Z', digits))) => digits,
        _ => return Err(bad),
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    let num = |s: &[u8]| s.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    let (year, rest_digits) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(&digits[..2]);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (num(&digits[..4]), &digits[4..]),
        _ => return Err(bad),
    };
    let field = |i: usize| num(&rest_digits[i * 2..i * 2 + 2]);
    let (month, day, hour, minute, second) = (field(0), field(1), field(2), field(3), field(4));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(bad);
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let at = u64::try_from(secs)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .map_err(|_| BadCertificate("time before 1970"))?;
    Ok((at, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_read_from_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2024, 2, 29);
        params.not_after = rcgen::date_time_ymd(2051, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let v = Validity::of(cert.der()).unwrap();
        assert_eq!(
            v.not_before,
            UNIX_EPOCH + Duration::from_secs(1_709_164_800)
        );
        // 2051 is written as a GeneralizedTime.
        assert_eq!(v.not_after, UNIX_EPOCH + Duration::from_secs(2_556_144_000));
        assert!(v.renew_at() < v.not_after && v.renew_at() > v.not_before);
        assert!(Validity::of(b"\x30\x03\x02\x01\x00").is_err());
        assert!(Validity::of(&cert.der()[..40]).is_err());
    }
}
