//! The committed C header agrees with the code: version macros match Cargo.toml (the
//! composed DLSLIME_VERSION_NUMBER included), status constants match `Status`, the
//! sections follow the table of contents, and a fresh cbindgen run (pinned version, via
//! scripts/gen-header.sh --verify) produces the committed file byte for byte.

use std::path::Path;
use std::process::Command;

use dlslime::Status;

fn header() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/dlslime.h");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The replacement text of `#define name ...`.
fn define(h: &str, name: &str) -> String {
    let prefix = format!("#define {name} ");
    h.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("header lacks #define {name}"))
        .trim()
        .to_string()
}

/// Evaluates the composed version macro: integers, macro names, `<<`, `|` and parens.
fn eval(h: &str, expr: &str) -> u64 {
    let spaced = expr
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace("<<", " << ")
        .replace('|', " | ");
    let toks: Vec<&str> = spaced.split_whitespace().collect();
    fn parse_or(h: &str, t: &[&str], i: &mut usize) -> u64 {
        let mut v = parse_shift(h, t, i);
        while *i < t.len() && t[*i] == "|" {
            *i += 1;
            v |= parse_shift(h, t, i);
        }
        v
    }
    fn parse_shift(h: &str, t: &[&str], i: &mut usize) -> u64 {
        let mut v = parse_atom(h, t, i);
        while *i < t.len() && t[*i] == "<<" {
            *i += 1;
            v <<= parse_atom(h, t, i);
        }
        v
    }
    fn parse_atom(h: &str, t: &[&str], i: &mut usize) -> u64 {
        let tok = t[*i];
        *i += 1;
        if tok == "(" {
            let v = parse_or(h, t, i);
            assert_eq!(t[*i], ")");
            *i += 1;
            v
        } else if let Ok(n) = tok.parse() {
            n
        } else {
            eval(h, &define(h, tok))
        }
    }
    let mut i = 0;
    let v = parse_or(h, &toks, &mut i);
    assert_eq!(i, toks.len(), "trailing tokens in {expr:?}");
    v
}

#[test]
fn version_macros_match_cargo() {
    let h = header();
    let major: u64 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap();
    let minor: u64 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap();
    let patch: u64 = env!("CARGO_PKG_VERSION_PATCH").parse().unwrap();
    assert_eq!(
        define(&h, "DLSLIME_VERSION_MAJOR"),
        major.to_string(),
        "update cbindgen.toml after_includes"
    );
    assert_eq!(
        define(&h, "DLSLIME_VERSION_MINOR"),
        minor.to_string(),
        "update cbindgen.toml after_includes"
    );
    assert_eq!(
        define(&h, "DLSLIME_VERSION_PATCH"),
        patch.to_string(),
        "update cbindgen.toml after_includes"
    );
    let composed = eval(&h, &define(&h, "DLSLIME_VERSION_NUMBER"));
    assert_eq!(
        composed,
        (major << 16) | (minor << 8) | patch,
        "DLSLIME_VERSION_NUMBER composes wrongly"
    );
    assert_eq!(
        composed,
        u64::from(dlslime::ffi::version::dlslime_version_number())
    );
}

#[test]
fn status_constants_match_rust() {
    let h = header();
    for s in Status::ALL {
        let name = format!("{:?}", s);
        let mut screaming = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                screaming.push('_');
            }
            screaming.push(c.to_ascii_uppercase());
        }
        let want = format!("DLSLIME_STATUS_{screaming} = {},", s.code());
        assert!(h.lines().any(|l| l.trim() == want), "header lacks `{want}`");
    }
    let n = h
        .lines()
        .filter(|l| l.trim_start().starts_with("DLSLIME_STATUS_"))
        .count();
    assert_eq!(
        n,
        Status::ALL.len(),
        "header has status constants Rust does not know"
    );
}

#[test]
fn sections_follow_the_contents() {
    let h = header();
    // " *   3. Memory pool   dlslime_memory_pool_t, ..." in the top comment
    let contents: Vec<String> = h
        .lines()
        .skip_while(|l| l.trim() != "* Contents")
        .skip(2)
        .take_while(|l| l.trim() != "*")
        .filter_map(|l| {
            let t = l.trim_start_matches([' ', '*']);
            let (n, rest) = t.split_once(". ")?;
            n.parse::<u32>().ok()?;
            Some(format!("{n}. {}", rest.split("  ").next()?.trim()))
        })
        .collect();
    // the banner line after each "/* ====" opener
    let lines: Vec<&str> = h.lines().collect();
    let banners: Vec<String> = lines
        .windows(2)
        .filter(|w| w[0].starts_with("/* ===="))
        .map(|w| w[1].trim_start_matches([' ', '*']).to_string())
        .collect();
    assert!(contents.len() >= 9, "contents: {contents:?}");
    assert_eq!(
        contents, banners,
        "the sections are not in the order of the contents"
    );
    // every handle of the header is in the handle table
    for l in lines
        .iter()
        .filter(|l| l.starts_with("typedef struct dlslime_"))
    {
        let name = l.split_whitespace().nth(2).unwrap();
        assert!(
            lines
                .iter()
                .any(|t| t.starts_with(&format!(" *   {name} "))),
            "{name} is missing from the handle table"
        );
    }
}

#[test]
fn committed_header_matches_fresh_generation() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/gen-header.sh"))
        .arg("--verify")
        .current_dir(root)
        .output()
        .expect("run scripts/gen-header.sh");
    assert!(
        out.status.success(),
        "include/dlslime.h differs from a fresh cbindgen run (run scripts/gen-header.sh):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
