//! A run's state as a fold over its events.
