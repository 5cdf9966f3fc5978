"""The piano-roll editor: note grid, keyboard, ruler, velocity lane, tools and undo commands."""
