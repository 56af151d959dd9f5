"""Optional integrations with other frameworks. Each needs its extra (``pgqueue[django]``) and is
imported only by the projects that use it: the core never imports this package."""
