//! End-to-end tests across the three binaries (`builder`, `applier`, `schema-guard`) against
//! real services started by `ci/`. The tests live in `tests/tests/`; what they share (built
//! binaries, fixture repositories, ports, the missing-part rule) is the `testkit` crate.
