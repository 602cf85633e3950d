//! Tests live here once the engine is wired.
