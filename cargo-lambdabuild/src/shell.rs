//! Output in cargo's style: right-aligned coloured status words on stderr, errors as `error: …`,
//! quiet with `-q`, colours following `--color` and whether stderr is a terminal.

use std::io::Write;

use anstyle::{AnsiColor, Style};

use crate::cli::{ColorChoice, GlobalArgs};

const STATUS: Style = AnsiColor::Green.on_default().bold();
const ERROR: Style = AnsiColor::Red.on_default().bold();
const NOTE: Style = AnsiColor::Cyan.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();

/// Where the human-readable output goes.
pub struct Shell {
    quiet: bool,
    verbose: u8,
    color: anstream::ColorChoice,
}

impl Shell {
    pub fn new(args: &GlobalArgs) -> Shell {
        let color = match args.color {
            ColorChoice::Auto => anstream::ColorChoice::Auto,
            ColorChoice::Always => anstream::ColorChoice::Always,
            ColorChoice::Never => anstream::ColorChoice::Never,
        };
        Shell { quiet: args.quiet, verbose: args.verbose, color }
    }

    /// `   Status message`, like cargo's `   Compiling foo v0.1.0`.
    pub fn status(&self, status: &str, message: &str) {
        if !self.quiet {
            self.write_stderr(&format!("{STATUS}{status:>12}{STATUS:#} {message}\n"));
        }
    }

    /// `note: …`, shown with `-v`.
    pub fn verbose_note(&self, message: &str) {
        if self.verbose > 0 && !self.quiet {
            self.write_stderr(&format!("{NOTE}note{NOTE:#}: {message}\n"));
        }
    }

    /// `note: …`, unless quiet.
    pub fn note(&self, message: &str) {
        if !self.quiet {
            self.write_stderr(&format!("{NOTE}note{NOTE:#}: {message}\n"));
        }
    }

    /// `error: …`, always shown.
    pub fn error(&self, message: &str) {
        self.write_stderr(&format!("{ERROR}error{ERROR:#}: {message}\n"));
    }

    /// `warning: …`, unless quiet.
    pub fn warning(&self, message: &str) {
        if !self.quiet {
            self.write_stderr(&format!("{WARNING}warning{WARNING:#}: {message}\n"));
        }
    }

    /// Text that is already formatted (rustc's rendered diagnostics); colours stripped when not a terminal.
    pub fn raw_stderr(&self, text: &str) {
        self.write_stderr(text);
    }

    /// A result for the user on stdout (colours stripped unless stdout is a terminal too).
    pub fn print(&self, text: &str) {
        let mut stdout = anstream::AutoStream::new(std::io::stdout(), self.color);
        let _ = stdout.write_all(text.as_bytes());
    }

    fn write_stderr(&self, text: &str) {
        let mut stderr = anstream::AutoStream::new(std::io::stderr(), self.color);
        let _ = stderr.write_all(text.as_bytes());
    }
}

/// `1.2 MiB`, `345 B`: sizes for humans, in cargo's binary units.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_like_cargo() {
        assert_eq!(human_bytes(345), "345 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(512 * 1024 * 1024 + 300 * 1024 * 1024), "812.0 MiB");
    }
}
