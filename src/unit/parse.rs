//! Parses one unit file (stub).
use super::Unit;
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct UnitError {
    pub path: std::path::PathBuf,
    pub msg: String,
}
pub fn parse_unit(_name: &str, path: &std::path::Path, _text: &str) -> Result<Unit, UnitError> {
    Err(UnitError {
        path: path.to_path_buf(),
        msg: "unimplemented".into(),
    })
}
