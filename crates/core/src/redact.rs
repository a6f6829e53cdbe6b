//! Keeps passwords out of everything a user or a log sees: URLs are shown
//! as `scheme://user:***@host/path`.

use url::Url;

/// The URL as it may be shown: its password, if any, replaced by `***`.
pub fn redact_url(url: &Url) -> String {
    if url.password().is_some() {
        let mut shown = url.clone();
        // Setting a password only fails for URLs that cannot have one, and
        // this one has one.
        let _ = shown.set_password(Some("***"));
        shown.to_string()
    } else {
        url.to_string()
    }
}

/// Like [`redact_url`], for text that may not parse as a URL: the part
/// between `:` and `@` of the authority is hidden anyway.
pub fn redact_url_str(text: &str) -> String {
    if let Ok(url) = Url::parse(text) {
        return redact_url(&url);
    }
    // Unparsable: hide whatever looks like `user:password@` in the
    // authority, so a malformed URL cannot leak its password in an error.
    let (scheme, rest) = match text.find("://") {
        Some(i) => (&text[..i + 3], &text[i + 3..]),
        None => ("", text),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{scheme}{}:***{}", &authority[..colon], &rest[at..])
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords() {
        let url = Url::parse("sftp://belle:s3cret@host/files/a.txt").unwrap();
        assert_eq!(redact_url(&url), "sftp://belle:***@host/files/a.txt");
        let url = Url::parse("https://host/a?x=1").unwrap();
        assert_eq!(redact_url(&url), "https://host/a?x=1");
        assert_eq!(
            redact_url_str("ftp://bob:pw@[bad/x"),
            "ftp://bob:***@[bad/x"
        );
        assert_eq!(redact_url_str("not a url"), "not a url");
        assert!(!redact_url_str("ftp://u:p%40ss@h:99999/x").contains("p%40ss"));
    }
}
