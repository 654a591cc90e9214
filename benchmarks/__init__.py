"""`make bench`: connlease measured side by side with what users would otherwise pick."""
