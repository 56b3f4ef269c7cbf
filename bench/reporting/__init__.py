"""From rows to readers: tables and their rendering, plots, the leaderboard (entries, page), exports, comparisons."""
