//! Grants sealed to X25519 recipients.

use cairn_crypto::{Access, Error, Grant, Identity, Recipient, RootSecret};

#[test]
fn sealed_grant_opens_only_for_its_recipient() {
    let alice = RootSecret::generate().account();
    let bob = RootSecret::generate().account().identity();
    let eve = Identity::generate();
    let grant = Grant::new("photos", "2026/", Access::Read, [5; 32]);
    let recipient = Recipient::parse(&bob.recipient().to_string()).expect("parse");
    let sealed = recipient.seal_grant(&grant).expect("seal");
    assert!(sealed.starts_with("cairn-sealed1-"));
    let opened = bob.open_grant(&sealed).expect("open");
    assert_eq!(opened, grant);
    assert_eq!(opened.bucket_keys().index.as_bytes(), grant.bucket_keys().index.as_bytes());
    assert!(matches!(eve.open_grant(&sealed), Err(Error::Decrypt(_))));
    assert!(matches!(alice.identity().open_grant(&sealed), Err(Error::Decrypt(_))));
}

#[test]
fn tampered_or_malformed_sealed_grants_are_refused() {
    let bob = Identity::generate();
    let grant = Grant::new("b", "", Access::ReadWrite, [1; 32]);
    let sealed = bob.recipient().seal_grant(&grant).expect("seal");
    let mut chars: Vec<char> = sealed.chars().collect();
    let i = chars.len() - 5;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    assert!(bob.open_grant(&tampered).is_err());
    for bad in ["", "cairn-sealed1-", "cairn-sealed1-!!!", "cairn-grant1-AAAA", "cairn-sealed1-AAAA"] {
        assert!(bob.open_grant(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn grant_strings_round_trip() {
    let g = Grant::new("bucket", "a/b/", Access::ReadWrite, [7; 32]);
    let s = g.to_string_secret();
    assert_eq!(Grant::parse(&s).expect("parse"), g);
    assert!(matches!(Grant::parse("nope"), Err(Error::BadGrant(_))));
    assert!(!format!("{g:?}").contains("7, 7"), "Debug must not show the key");
}

#[test]
fn low_order_recipient_is_refused() {
    let zero = Recipient::parse(&format!("cairn-recipient1-{}", "A".repeat(43))).expect("parse");
    assert!(matches!(zero.seal_grant(&Grant::new("b", "", Access::Read, [0; 32])), Err(Error::BadGrant(_))));
}
