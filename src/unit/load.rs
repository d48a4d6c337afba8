//! Reads a units directory: every `*.toml` regular file (symlinks followed),
//! in name order, hidden files skipped. Returns every unit that parsed and
//! every error, never just the first: one broken file must not keep the
//! others from running.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{parse_unit, Unit, UnitError};

/// A unit file larger than this is refused rather than read into memory.
pub const MAX_UNIT_FILE: u64 = 1 << 20;

#[derive(Debug, Default)]
pub struct LoadReport {
    pub units: Vec<Unit>,
    pub errors: Vec<UnitError>,
}

fn file_error(path: &Path, msg: String) -> UnitError {
    UnitError {
        path: path.to_path_buf(),
        line: 0,
        col: 0,
        key: None,
        msg,
    }
}

fn read_unit(path: &Path) -> Result<String, UnitError> {
    let file =
        std::fs::File::open(path).map_err(|e| file_error(path, format!("cannot open: {e}")))?;
    let mut text = String::new();
    let n = file
        .take(MAX_UNIT_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    if u64::try_from(n).unwrap_or(u64::MAX) > MAX_UNIT_FILE {
        return Err(file_error(
            path,
            format!("larger than {MAX_UNIT_FILE} bytes"),
        ));
    }
    Ok(text)
}

/// The unit files in `dir`, sorted; hidden files and other extensions skipped.
pub fn unit_files(dir: &Path) -> Result<Vec<PathBuf>, UnitError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| file_error(dir, format!("cannot read units directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && p.extension().is_some_and(|e| e == "toml") && p.is_file()
        })
        .collect();
    paths.sort();
    Ok(paths)
}

pub fn load_dir(dir: &Path) -> LoadReport {
    let mut report = LoadReport::default();
    let paths = match unit_files(dir) {
        Ok(p) => p,
        Err(e) => {
            report.errors.push(e);
            return report;
        }
    };
    for path in paths {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            report
                .errors
                .push(file_error(&path, "file name is not valid UTF-8".into()));
            continue;
        };
        match read_unit(&path)
            .map_err(super::UnitErrors::from)
            .and_then(|text| parse_unit(name, &path, &text))
        {
            Ok(unit) => report.units.push(unit),
            Err(e) => report.errors.extend(e),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_good_reports_every_bad_skips_the_rest() {
        let dir = std::env::temp_dir().join(format!("zurg-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write("b.toml", "exec = \"/bin/true\"\n");
        write("a.toml", "exec = \"/bin/sh\"\nargs = [\"-c\", \"true\"]\n");
        write("bad1.toml", "exec = 1\n");
        write("bad2.toml", "nope = true\nexec = \"/x\"\n");
        write("notes.txt", "exec = 1\n");
        write(".hidden.toml", "exec = 1\n");
        write(
            "big.toml",
            &"#".repeat(usize::try_from(MAX_UNIT_FILE).unwrap() + 1),
        );
        std::fs::create_dir_all(dir.join("sub.toml")).unwrap();
        let r = load_dir(&dir);
        let names: Vec<&str> = r.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let errs: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].contains("bad1.toml:1:8: key `exec`"), "{errs:?}");
        assert!(errs[1].contains("bad2.toml:1:1: key `nope`"), "{errs:?}");
        assert!(errs[2].contains("big.toml: larger than"), "{errs:?}");
        std::fs::remove_dir_all(&dir).unwrap();
        let r = load_dir(&dir);
        assert!(r.units.is_empty());
        assert!(r.errors[0]
            .to_string()
            .contains("cannot read units directory"));
    }

    #[test]
    fn shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
        let r = load_dir(&dir);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.units.len() >= 3, "{:?}", r.units);
    }
}
