//! Printing for people (aligned tables) and scripts (one JSON object a line).

use crate::deadletter::queries::Detail;

pub(super) fn print_detail(d: &Detail) -> anyhow::Result<()> {
    let r = &d.row;
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!("id:                {}", r.id);
    println!("job id:            {}", r.job_id);
    println!("failed at:         {}", r.failed_at);
    println!(
        "channel:           {} (queue {})",
        r.channel, d.source_queue
    );
    println!("provider:          {}", or_dash(r.provider.clone()));
    println!("error code:        {}", r.error_code);
    println!(
        "http status:       {}",
        or_dash(r.http_status.map(|s| s.to_string()))
    );
    println!("attempts:          {}", r.attempts);
    println!("replayed at:       {}", or_dash(d.replayed_at.clone()));
    println!("reason and fix:    {}", r.reason);
    println!(
        "provider response: {}",
        or_dash(d.provider_response.clone())
    );
    match (&d.payload, &d.raw_payload) {
        (Some(p), _) => println!("payload:\n{}", serde_json::to_string_pretty(p)?),
        (None, Some(raw)) => println!("raw payload (not JSON):\n{}", String::from_utf8_lossy(raw)),
        _ => println!("payload: -"),
    }
    Ok(())
}

pub(super) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// One JSON object per line for scripts, or a table for people.
pub(super) fn print_rows<T: serde::Serialize>(
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
