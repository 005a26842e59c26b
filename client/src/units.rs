//! Human units, re-exported from [`qexec_protocol::units`]: one implementation shared
//! with `qexecd`'s flags.

pub use qexec_protocol::units::{
    UnitError, format_cpu, format_duration, format_size, format_timestamp, parse_cpu,
    parse_duration, parse_size,
};
