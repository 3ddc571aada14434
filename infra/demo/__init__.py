"""`make demo`: a scripted week of leads through the local stack (`week`), with every
sink pointed at the development receivers (`handoff`)."""
