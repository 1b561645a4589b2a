//! Unit tests of the checks added for `config check` (issue 15): sizes with
//! suffixes, "did you mean", listener clashes, rules naming unknown
//! listeners.
//!
//! May touch: nothing.

use super::*;

#[test]
fn sizes() {
    // (text, bytes or None for an error)
    let table = [
        ("0", Some(0)),
        ("26214400", Some(26_214_400)),
        ("512k", Some(512 * 1024)),
        ("512K", Some(512 * 1024)),
        ("25M", Some(25 << 20)),
        ("10MB", Some(10 << 20)),
        ("10MiB", Some(10 << 20)),
        ("1G", Some(1 << 30)),
        (" 2 G ", Some(2 << 30)),
        ("100B", Some(100)),
        ("25T", None),
        ("M", None),
        ("-1", None),
        ("1.5M", None),
        ("99999999999999999999G", None),
        ("17179869184G", None),
    ];
    for (text, want) in table {
        assert_eq!(parse_size(text).ok(), want, "{text}");
    }
    for n in [0u64, 1, 1000, 1024, 25 << 20, (1 << 30) * 3, 1536] {
        assert_eq!(parse_size(&format_size(n)).ok(), Some(n));
    }
    assert_eq!(format_size(25 << 20), "25M");
}

#[test]
fn size_keys_take_suffixes() {
    let c =
        Config::parse("[limits]\nmax_message_size = \"25M\"\n[queue]\nmin_free_space = \"1G\"\nbounce_size_limit = \"64K\"\n", "f.toml")
            .unwrap();
    assert_eq!(c.limits.max_message_size, 25 << 20);
    assert_eq!(c.queue.min_free_space, 1 << 30);
    assert_eq!(c.queue.bounce_size_limit, 64 << 10);
    let c = Config::parse("[limits]\nmax_message_size = 1000\n", "f.toml").unwrap();
    assert_eq!(c.limits.max_message_size, 1000);
}

/// One bad config, every expected problem line (substring) in it.
#[test]
fn problems() {
    let table: &[(&str, &[&str])] = &[
        (
            "[limits]\nmax_message_size = \"25Q\"\n[queue]\nmin_free_space = true\n",
            &[
                "f.toml:2:20: key `limits.max_message_size`: bad size \"25Q\" (use bytes, e.g. 26214400, or a number with K, M or G",
                "f.toml:4:18: key `queue.min_free_space`: expected a size",
            ],
        ),
        ("[limits]\nmax_mesage_size = 1\n", &["f.toml:2:1: key `limits.max_mesage_size`: unknown field", "did you mean `max_message_size`?"]),
        ("[[listener]]\naddress = \"127.0.0.1:25\"\nrole = \"smpt\"\n", &["f.toml:3:8: key `listener.role`: unknown variant `smpt`", "did you mean `smtp`?"]),
        (
            "[[listener]]\naddress = \"0.0.0.0:25\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nname = \"b\"\n",
            &["f.toml:4:11: key `listener.address`: 127.0.0.1:25 is bound by another listener too (0.0.0.0:25)"],
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:25\"\n[[rule]]\naction = \"relay\"\nlistener = [\"smtp\", \"nosuch\"]\n",
            &["f.toml:5:21: key `rule.listener`: no [[listener]] named \"nosuch\" (listeners are named by `name`, else by their role: smtp)"],
        ),
    ];
    for (text, want) in table {
        let e = Config::parse(text, "f.toml").unwrap_err().to_string();
        for w in *want {
            assert!(e.contains(w), "{text}\nwant {w:?} in:\n{e}");
        }
    }
}

#[test]
fn listener_clashes() {
    let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    // (first, second, clash)
    let table = [
        ("127.0.0.1:25", "127.0.0.1:25", true),
        ("0.0.0.0:25", "127.0.0.1:25", true),
        ("127.0.0.1:25", "0.0.0.0:25", true),
        ("127.0.0.1:25", "127.0.0.2:25", false),
        ("127.0.0.1:25", "127.0.0.1:587", false),
        ("[::]:25", "0.0.0.0:25", true),
        ("[::1]:25", "127.0.0.1:25", false),
        ("127.0.0.1:0", "127.0.0.1:0", false),
    ];
    for (x, y, want) in table {
        assert_eq!(validate::clashes(a(x), a(y)), want, "{x} {y}");
    }
}
