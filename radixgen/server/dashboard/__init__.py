"""`/dashboard`: a live view of the radix cache, and `/cache_tree`, its JSON (docs/dashboard.md)."""
