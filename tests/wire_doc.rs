//! The byte-level examples in docs/tcp-wire-format.md must match the encoder.

use dlslime::transport::tcp::wire::{Header, Hello, Opcode, HEADER_LEN, WIRE_VERSION};
use dlslime::Status;

fn hex_blocks(doc: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    for line in doc.lines() {
        match (line.trim(), cur.as_mut()) {
            ("```hex", None) => cur = Some(Vec::new()),
            ("```", Some(_)) => out.push(cur.take().unwrap()),
            (l, Some(v)) => v.extend(
                l.split_whitespace()
                    .map(|b| u8::from_str_radix(b, 16).expect("hex byte")),
            ),
            _ => {}
        }
    }
    out
}

#[test]
fn documented_examples_match_the_encoder() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/tcp-wire-format.md"
    ))
    .unwrap();
    let blocks = hex_blocks(&doc);
    assert_eq!(blocks.len(), 3, "expected three hex examples");
    let write = Header {
        size: 5,
        addr: 0x7f00_1234_5000,
        key: 0x0123_4567_89ab_cdef,
        req_id: 7,
        endpoint: 1,
        ..Header::new(Opcode::Write)
    };
    let mut frame = write.encode().to_vec();
    frame.extend_from_slice(b"hello");
    assert_eq!(blocks[0], frame);
    assert_eq!(
        Header::decode(blocks[0][..HEADER_LEN].try_into().unwrap()),
        write
    );
    assert_eq!(blocks[1], Header::reply(7, Status::Ok, 0).encode().to_vec());
    let hello = Hello {
        version: WIRE_VERSION,
        status: 0,
        context_id: 0x0123_4567_89ab_cdef,
    };
    assert_eq!(blocks[2], hello.encode().to_vec());
}
