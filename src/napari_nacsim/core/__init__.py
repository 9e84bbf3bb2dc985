"""Core data: scans, their files, the clinical schema and cohort manifests. No torch, no Qt."""
