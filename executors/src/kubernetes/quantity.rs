//! Memory quantities as Kubernetes writes them (`512Mi`, `1G`, `1.5Gi`,
//! `129e6`, `1000000`), to and from bytes.

/// Bytes in a Kubernetes quantity, rounded up; None when it is not one.
pub fn bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    let b = (value * multiplier).ceil();
    (b.is_finite() && b >= 0.0 && b < u64::MAX as f64).then_some(b as u64)
}

/// Whole mebibytes, as `NMi` (rounded up to the next MiB).
pub fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_kubernetes_writes() {
        assert_eq!(bytes("512Mi"), Some(512 << 20));
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("129e6"), Some(129_000_000));
        assert_eq!(bytes("128974848"), Some(128_974_848));
        assert_eq!(bytes("64k"), Some(64_000));
        assert_eq!(bytes("1500m"), Some(2));
        assert_eq!(bytes("12Qi"), None);
        assert_eq!(bytes("lots"), None);
        assert_eq!(bytes("-1Mi"), None);
    }

    #[test]
    fn renders_whole_mebibytes() {
        assert_eq!(mebibytes(512 << 20), "512Mi");
        assert_eq!(mebibytes((512 << 20) + 1), "513Mi");
    }
}
