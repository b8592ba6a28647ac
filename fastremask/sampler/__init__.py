"""The sampler core: schedules, exact numerics, the specification (`reference`), the
`torch` backend (`fast`), the backends' interface, the configuration and the one loop."""
