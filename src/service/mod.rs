//! Service state machine (stub).
