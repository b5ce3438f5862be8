"""Quality: heuristic and classifier scores of every document."""
