//! The precedence table of a definition, checked for every setting: default < file <
//! variable < flag. The values are derived from each default (a number counts up, a
//! duration, an address, a port or a range moves by one, a list gets names); a setting whose
//! default gives nothing to derive from takes its values from the caller, and the check
//! fails naming any setting that has none, so a new setting cannot go unchecked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::{Inputs, Settings, Source, load, table_of};

/// Three values for a setting, one per layer (file, variable, flag), each unlike the one
/// below it and the first unlike the default.
pub type Samples = [String; 3];

/// Checks the table for every setting of `S`; `fallback` gives values for the settings that
/// cannot be derived (required ones, enumerations), `valid` is the program's validation.
pub fn check_precedence<S: Settings>(
    fallback: impl Fn(&str) -> Option<[&'static str; 3]>,
    valid: impl Fn(&S) -> Result<(), String>,
) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("postern-precedence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join(format!("{}.toml", S::ENV_PREFIX));
    let outcome = check_in::<S>(&file, &fallback, &valid);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn check_in<S: Settings>(
    file: &std::path::Path,
    fallback: &dyn Fn(&str) -> Option<[&'static str; 3]>,
    valid: &dyn Fn(&S) -> Result<(), String>,
) -> Result<(), String> {
    let defaults = table_of(&S::default()).map_err(|e| e.to_string())?;
    let samples = |key: &str| -> Result<Samples, String> {
        fallback(key)
            .map(|s| s.map(str::to_owned))
            .or_else(|| defaults.get(key).and_then(derive))
            .ok_or_else(|| format!("{key}: no values to test it with; give some in the fallback"))
    };
    for spec in S::SPECS {
        let [in_file, in_env, in_flag] = samples(spec.key)?;
        let key = spec.key;
        // The other required settings are in every file, so that each load succeeds.
        let mut base = String::new();
        for other in S::SPECS.iter().filter(|s| s.required && s.key != key) {
            let value = toml_text(&samples(other.key)?[0]);
            base.push_str(&format!("{} = {value}\n", other.key));
        }
        let got = |inputs: &Inputs| -> Result<String, String> {
            let settings: S = load(inputs).map_err(|e| format!("{key}: {e}"))?;
            valid(&settings).map_err(|e| format!("{key}: {e}"))?;
            let table = table_of(&settings).map_err(|e| e.to_string())?;
            Ok(table.get(key).map(rendered).unwrap_or_default())
        };
        let expect = |layer: &str, got: String, want: &str| {
            if got == want {
                Ok(())
            } else {
                Err(format!(
                    "{key} from the {layer}: got {got:?}, want {want:?}"
                ))
            }
        };
        let mut inputs = Inputs {
            file: Some(file.to_owned()),
            ..Default::default()
        };
        if !spec.required {
            std::fs::write(file, &base).map_err(|e| e.to_string())?;
            let default = defaults.get(key).map(rendered).unwrap_or_default();
            expect("default", got(&inputs)?, &default)?;
        }
        let in_toml = match defaults.get(key) {
            Some(toml::Value::Array(_)) => {
                let items = in_file.split(',').map(|i| toml::Value::String(i.into()));
                toml::Value::Array(items.collect()).to_string()
            }
            _ => toml_text(&in_file),
        };
        let text = format!("{base}{key} = {in_toml}\n");
        std::fs::write(file, text).map_err(|e| e.to_string())?;
        expect("file", got(&inputs)?, &in_file)?;
        let variable = spec.variable(S::ENV_PREFIX);
        inputs.env = vec![(variable.clone().into(), in_env.clone().into())];
        expect(
            &Source::Variable(variable).to_string(),
            got(&inputs)?,
            &in_env,
        )?;
        inputs.flags = vec![(spec.key, vec![in_flag.clone()])];
        expect("flag", got(&inputs)?, &in_flag)?;
    }
    Ok(())
}

/// A value as text, the way flags and variables write it.
fn rendered(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(rendered).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The text as a TOML value in a file: itself when it is one, else a string.
fn toml_text(text: &str) -> String {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(table) if table.len() == 1 => text.to_owned(),
        _ => toml::Value::String(text.to_owned()).to_string(),
    }
}

fn derive(default: &toml::Value) -> Option<Samples> {
    let three =
        |f: &dyn Fn(u64) -> Option<String>| -> Option<Samples> { Some([f(1)?, f(2)?, f(3)?]) };
    match default {
        toml::Value::Integer(n) => three(&|i| Some((n + i as i64).to_string())),
        toml::Value::Array(items) if items.is_empty() => {
            Some(["ann", "bo", "cy"].map(str::to_owned))
        }
        toml::Value::String(s) => {
            if let Ok(d) = humantime::parse_duration(s) {
                return three(&|i| {
                    Some(humantime::format_duration(d + Duration::from_secs(i)).to_string())
                });
            }
            if let Ok(addr) = s.parse::<SocketAddr>() {
                return three(&|i| {
                    let port = addr.port().checked_add(u16::try_from(i).ok()?)?;
                    Some(SocketAddr::new(addr.ip(), port).to_string())
                });
            }
            if let Ok(IpAddr::V4(ip)) = s.parse::<IpAddr>() {
                let [a, b, c, d] = ip.octets();
                return three(&|i| Some(format!("{a}.{b}.{c}.{}", d.checked_add(i as u8)?)));
            }
            let (first, last) = s.split_once('-')?;
            let (first, last) = (first.parse::<u16>().ok()?, last.parse::<u16>().ok()?);
            three(&|i| Some(format!("{}-{last}", first.checked_add(i as u16)?)))
        }
        _ => None,
    }
}
