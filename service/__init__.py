"""The Lambda side: settings, the composition root and the Powertools handlers."""
