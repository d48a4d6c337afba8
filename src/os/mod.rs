//! OS layer (stub).
