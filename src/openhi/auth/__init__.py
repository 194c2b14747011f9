"""Who may do what: the route table (every route names its action), IAM-style policies and principals."""
