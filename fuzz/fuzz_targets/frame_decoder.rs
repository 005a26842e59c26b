//! Arbitrary bytes, fed in arbitrary pieces through the frame decoder of each message
//! family (spec: QX-FRAME-*). The checks live in `qexec_protocol::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qexec_protocol::fuzzing::frame_decoder(data));
