//! End-to-end tests: the CCM and library against azure-sim and kube-sim (see `tests/tests/`).
