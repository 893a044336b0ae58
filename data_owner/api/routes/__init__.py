"""One router per area: health, export, audit."""
