//! Turnstile
