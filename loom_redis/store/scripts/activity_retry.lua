-- Schedule the next attempt of a failed activity through the timer zset.
-- KEYS: meta, queue, timers
-- ARGV: seq, task id, consumer group, due (ms), timer member, lease (see activity_result)
expect_types({KEYS[1], 'hash', KEYS[2], 'stream', KEYS[3], 'zset'})
ack(KEYS[2], ARGV[3], ARGV[2])
if ARGV[6] ~= '' then redis.call('ZREM', KEYS[3], ARGV[6]) end
if not open_status(KEYS[1]) then return 'dropped' end
if redis.call('HGET', KEYS[1], 'a:' .. ARGV[1]) ~= '1' then return 'duplicate' end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
return 'ok'
