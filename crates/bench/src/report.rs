//! Figures, their targets, the printed table and the JSON report.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

/// An absolute target on the Postern figure.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtMost(f64),
}

/// A target relative to the baseline's figure.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VsBaseline {
    /// Strictly below the baseline.
    Below,
    /// At most the baseline.
    AtMost,
    /// postern / baseline at least this.
    RatioAtLeast(f64),
}

#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub id: String,
    pub name: String,
    pub unit: String,
    pub postern: Option<f64>,
    pub baseline: Option<f64>,
    /// postern / baseline.
    pub ratio: Option<f64>,
    pub bound: Option<Bound>,
    pub vs_baseline: Option<VsBaseline>,
    pub target: String,
    /// Whether every target of the figure was met; absent when it has none.
    pub met: Option<bool>,
    pub details: Value,
}

impl Figure {
    pub fn new(id: &str, name: impl Into<String>, unit: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: name.into(),
            unit: unit.to_owned(),
            postern: None,
            baseline: None,
            ratio: None,
            bound: None,
            vs_baseline: None,
            target: String::new(),
            met: None,
            details: Value::Null,
        }
    }

    pub fn postern(mut self, value: f64) -> Self {
        self.postern = Some(value);
        self
    }

    pub fn baseline(mut self, value: Option<f64>) -> Self {
        self.baseline = value;
        self
    }

    pub fn bound(mut self, bound: Bound) -> Self {
        self.bound = Some(bound);
        self
    }

    pub fn vs_baseline(mut self, rule: VsBaseline) -> Self {
        self.vs_baseline = Some(rule);
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Computes the ratio, the target's text and whether it was met.
    pub fn judged(mut self) -> Self {
        self.ratio = match (self.postern, self.baseline) {
            (Some(p), Some(b)) if b != 0.0 => Some(p / b),
            _ => None,
        };
        let mut parts = Vec::new();
        let mut met = true;
        if let Some(bound) = self.bound {
            let (text, ok) = match bound {
                Bound::AtMost(v) => (
                    format!("≤ {}", number(v)),
                    self.postern.is_some_and(|p| p <= v),
                ),
            };
            parts.push(text);
            met &= ok;
        }
        if let Some(rule) = self.vs_baseline {
            let (text, ok) = match (rule, self.postern, self.baseline) {
                (VsBaseline::Below, p, b) => (
                    "< baseline".to_owned(),
                    matches!((p, b), (Some(p), Some(b)) if p < b),
                ),
                (VsBaseline::AtMost, p, b) => (
                    "≤ baseline".to_owned(),
                    matches!((p, b), (Some(p), Some(b)) if p <= b),
                ),
                (VsBaseline::RatioAtLeast(r), _, _) => (
                    format!("≥ {}× baseline", number(r)),
                    self.ratio.is_some_and(|x| x >= r),
                ),
            };
            parts.push(text);
            met &= ok;
        }
        self.target = parts.join(", ");
        self.met = (!parts.is_empty()).then_some(met);
        self
    }
}

/// A figure's value as printed: three significant digits, no exponent.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    if a >= 100.0 || a == 0.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(v) => format!("{} {unit}", number(v)),
        None => "—".into(),
    }
}

/// The table: figure | postern | baseline | ratio | target | met?
pub fn table(figures: &[Figure]) -> String {
    let header = ["figure", "postern", "baseline", "ratio", "target", "met?"];
    let rows: Vec<[String; 6]> = figures
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                cell(f.postern, &f.unit),
                cell(f.baseline, &f.unit),
                f.ratio
                    .map(|r| format!("{}×", number(r)))
                    .unwrap_or_else(|| "—".into()),
                if f.target.is_empty() {
                    "—".into()
                } else {
                    f.target.clone()
                },
                match f.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "—".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |", padded.join(" | "))
    };
    let mut out = vec![
        line(&header.map(str::to_owned)),
        format!("|{}|", widths.map(|w| "-".repeat(w + 2)).join("|")),
    ];
    out.extend(rows.iter().map(|r| line(r)));
    out.join("\n")
}

/// Writes the JSON report, creating the directory.
pub fn write_json(path: &Path, report: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, format!("{text}\n"))
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_judged_against_both_bounds() {
        let f = Figure::new("x", "x", "ms")
            .postern(20.0)
            .baseline(Some(40.0))
            .bound(Bound::AtMost(30.0))
            .vs_baseline(VsBaseline::Below)
            .judged();
        assert_eq!(f.met, Some(true));
        assert_eq!(f.ratio, Some(0.5));
        assert_eq!(f.target, "≤ 30, < baseline");
        let f = Figure::new("y", "y", "MB/s")
            .postern(90.0)
            .baseline(Some(100.0))
            .vs_baseline(VsBaseline::RatioAtLeast(1.0))
            .judged();
        assert_eq!(f.met, Some(false));
        let f = Figure::new("z", "z", "s").postern(1.0).judged();
        assert_eq!(f.met, None);
        let f = Figure::new("w", "w", "s")
            .bound(Bound::AtMost(1.0))
            .judged();
        assert_eq!(f.met, Some(false));
    }

    #[test]
    fn table_lines_up() {
        let t = table(&[Figure::new("a", "a figure", "ms").postern(1.5).judged()]);
        let widths: Vec<usize> = t.lines().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{t}");
    }
}
