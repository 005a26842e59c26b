//! Arbitrary bytes decoded as one frame body of each message family
//! (spec: QX-FRAME-3, QX-FRAME-4, QX-VER-3). The checks live in
//! `qexec_protocol::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qexec_protocol::fuzzing::message_decoder(data));
