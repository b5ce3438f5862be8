"""The build machinery: running one stage resumably, its plan and layers, build records, file checks, shard tasks."""
