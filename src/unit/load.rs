//! Reads a units directory (stub).
use super::{Unit, UnitError};
#[derive(Debug, Default)]
pub struct LoadReport {
    pub units: Vec<Unit>,
    pub errors: Vec<UnitError>,
}
pub fn load_dir(_dir: &std::path::Path) -> LoadReport {
    LoadReport::default()
}
