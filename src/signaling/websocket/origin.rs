//! `--allowed-origins`: which browser pages may open `/ws`. The Origin header is what a
//! browser cannot fake, so it is what keeps other sites from using a visitor's network.

/// Which `Origin`s may upgrade. Requests without an Origin (non-browser clients) and
/// same-origin pages (the demo page) are always allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Only same-origin pages (the flag is empty).
    SameOrigin,
    /// Any origin (`*`).
    Any,
    /// Same-origin pages and these origins (`scheme://host[:port]`, compared case-insensitively).
    List(Vec<String>),
}

impl OriginPolicy {
    /// Reads the flag's comma-separated entries.
    pub fn from_flag<'a>(entries: impl IntoIterator<Item = &'a str>) -> Self {
        let list: Vec<String> = entries
            .into_iter()
            .map(|e| e.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        if list.iter().any(|e| e == "*") {
            Self::Any
        } else if list.is_empty() {
            Self::SameOrigin
        } else {
            Self::List(list)
        }
    }

    /// Whether a request with these `Origin` and `Host` headers may upgrade.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        let authority = origin.split_once("://").map(|(_, rest)| rest);
        let same_origin =
            matches!((authority, host), (Some(a), Some(h)) if a == h.to_ascii_lowercase());
        match self {
            Self::Any => true,
            Self::SameOrigin => same_origin,
            Self::List(list) => same_origin || list.contains(&origin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_picks_a_policy() {
        assert_eq!(OriginPolicy::from_flag([]), OriginPolicy::SameOrigin);
        assert_eq!(OriginPolicy::from_flag([""]), OriginPolicy::SameOrigin);
        assert_eq!(OriginPolicy::from_flag(["a", "*"]), OriginPolicy::Any);
    }

    #[test]
    fn origins_are_checked() {
        let host = Some("127.0.0.1:8080");
        let same = OriginPolicy::SameOrigin;
        assert!(same.allows(None, host));
        assert!(same.allows(Some("http://127.0.0.1:8080"), host));
        assert!(!same.allows(Some("https://evil.example"), host));
        let list = OriginPolicy::from_flag(["https://App.example/"]);
        assert!(list.allows(Some("https://app.example"), host));
        assert!(list.allows(Some("http://127.0.0.1:8080"), host));
        assert!(!list.allows(Some("https://evil.example"), host));
        assert!(OriginPolicy::Any.allows(Some("https://evil.example"), host));
    }
}
