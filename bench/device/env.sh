# sourced by every device command: unpack SimpleITK and the label maps once per machine
export PYTHONUNBUFFERED=1
if [ ! -f /tmp/site/SimpleITK/__init__.py ]; then mkdir -p /tmp/site && tar xJf gpu_carry/sitk.tar.xz -C /tmp/site || exit 1; fi
if [ ! -f /tmp/lm/training_seg_20.nii ]; then mkdir -p /tmp/lm && tar xJf gpu_carry/lm.tar.xz -C /tmp/lm || exit 1; fi
export PYTHONPATH=/tmp/site:$PWD/SegLossBrain
