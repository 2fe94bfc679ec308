//! Writing to stdout: `out!` and `outln!` are `print!` and `println!` that end the program
//! quietly when the reader went away, and the tables-or-JSON printers the commands share.

use crate::render;
use framefleet_proto::v1::{Channel, FrameSchema};

/// Writes to stdout. A reader that went away (`framefleet --json status | head`) ends the
/// program quietly with status 0, as other command-line tools do, instead of a panic.
pub(crate) fn write_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {error}");
        std::process::exit(1);
    }
}

macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

pub(crate) fn print_channels(json: bool, channels: &[Channel]) {
    if json {
        outln!("{}", render::channels_json(channels));
    } else {
        out!("{}", render::channels_table(channels));
    }
}

pub(crate) fn print_schemas(json: bool, schemas: &[FrameSchema]) {
    if json {
        let values: Vec<serde_json::Value> = schemas.iter().map(render::schema_value).collect();
        outln!("{}", serde_json::Value::Array(values));
    } else {
        out!("{}", render::schemas_table(schemas));
    }
}
