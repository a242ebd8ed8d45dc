"""HTTP entry points; each module holds one Cornice service and its views."""
