"""An example robust-tickets plugin: a method and a subcommand, added without touching robust-tickets."""
