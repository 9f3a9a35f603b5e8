//! The operator and producer subcommands: `dead-letters`, `enqueue`,
//! `sandbox`, and `run --sandbox`. Parsing and printing here; the work is
//! done in `dlq`, `publisher` and `sandbox`.

mod dead_letters;
mod enqueue;
mod sandbox;

pub use dead_letters::{DeadLetters, dead_letters};
pub use enqueue::{EnqueueArgs, EnqueueJob, enqueue};
pub use sandbox::{SandboxArgs, attach_sandbox, sandbox};

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// One JSON object per line for scripts, or a table for people.
fn print_rows<T: serde::Serialize>(
    rows: &[T],
    json: bool,
    headers: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        for row in rows {
            println!("{}", serde_json::to_string(row)?);
        }
    } else {
        let table: Vec<Vec<String>> = rows.iter().map(cells).collect();
        print_table(headers, &table);
    }
    Ok(())
}

/// Prints left-aligned columns, two spaces apart.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use crate::configuration::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
