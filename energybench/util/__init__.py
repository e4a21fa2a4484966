"""Helpers every layer may import (numbers that may be missing, crash-safe file writes); they import no energybench."""
