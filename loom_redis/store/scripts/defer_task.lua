-- Hand a task back to its queue after a delay, through the timer zset: acknowledge it
-- (so that its deliveries start again from none) and add the timer member that queues
-- it again when due (kind 'requeue' for a workflow task, whose task flag it keeps;
-- 'retry' for an activity task). Once: a task no longer pending was handed on already.
-- KEYS: queue, timers
-- ARGV: task id, consumer group, due (ms), timer member
expect_types({KEYS[1], 'stream', KEYS[2], 'zset'})
if redis.call('XACK', KEYS[1], ARGV[2], ARGV[1]) == 0 then return 'gone' end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 'ok'
