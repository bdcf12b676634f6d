"""One Powertools `Router` per resource; each route parses, calls one service, answers."""
