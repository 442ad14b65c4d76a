//! Numbers and text shaped to fit a cell: ages, rates, sizes, clock offsets, cut and
//! wrapped lines. Every character is taken as one column wide.

/// `3s`, `2m05s`, `1h02m`, `3d04h`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `950`, `1.2k`, `3.4M`.
pub fn rate(per_s: f64) -> String {
    if per_s >= 999_500.0 {
        format!("{:.1}M", per_s / 1e6)
    } else if per_s >= 999.5 {
        format!("{:.1}k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

/// `512 B`, `1.2 kB`, `3.4 MB`, `1.1 GB` (powers of 1000, as disks and links count).
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 999_500_000.0 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 999_500.0 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 999.5 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n:.0} B")
    }
}

/// Cuts `text` to `width` characters, marking the cut with `…`.
pub fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// Breaks `text` into lines of at most `width` characters, between words where it can
/// and inside a word longer than a line. Line breaks in `text` are kept.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        let mut len = 0;
        for word in paragraph.split_whitespace() {
            let mut word: Vec<char> = word.chars().collect();
            loop {
                let gap = usize::from(len > 0);
                if len + gap + word.len() <= width {
                    if gap == 1 {
                        line.push(' ');
                    }
                    len += gap + word.len();
                    line.extend(word);
                    break;
                }
                if len > 0 {
                    lines.push(std::mem::take(&mut line));
                    len = 0;
                    continue;
                }
                lines.push(word[..width].iter().collect());
                word.drain(..width);
            }
        }
        lines.push(line);
    }
    lines
}

/// A clock offset in at most six characters, in the unit that fits it: `+12ms`,
/// `-1.99s`, `+12.3s`, `+14m`, `+11.7h`.
pub(crate) fn skew_text(ms: i64) -> String {
    let sign = if ms < 0 { '-' } else { '+' };
    let abs = ms.unsigned_abs();
    if abs < 1_000 {
        format!("{sign}{abs}ms")
    } else if abs < 9_995 {
        format!("{sign}{:.2}s", abs as f64 / 1e3)
    } else if abs < 99_950 {
        format!("{sign}{:.1}s", abs as f64 / 1e3)
    } else if abs < 3_600_000 {
        format!("{sign}{}m", abs / 60_000)
    } else if abs < 359_820_000 {
        format!("{sign}{:.1}h", abs as f64 / 3.6e6)
    } else {
        format!("{sign}{}h", abs / 3_600_000)
    }
}
