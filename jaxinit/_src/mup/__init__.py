"""µP, Depth-µP and CompleteP for parameter trees (public face: ``jaxinit.mup``)."""
