"""Framework backends of ddpm_core (each imports its own framework)."""
