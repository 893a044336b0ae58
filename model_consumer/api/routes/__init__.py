"""One router per area: health, recommendations, items, model, admin (metrics have a port of their own)."""
