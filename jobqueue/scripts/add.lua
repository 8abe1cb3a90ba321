-- Stores a new job: see add_job (includes/zz_add_job.lua), shared with the scripts that
-- create jobs on the way (a schedule's tick).
return add_job(ARGV)
